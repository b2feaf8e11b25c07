# The records job's worker container for Dataflow (`make dataflow-image IMAGE=...`, then
# `make dataflow ... IMAGE=...`): Beam's own Python 3.11 SDK image, of the Beam version the lock
# pins, plus the records job's locked packages and this project's code. Workers start ready, with
# no pip at start-up, and run exactly the versions the tests ran. No TensorFlow: the job needs none.
FROM apache/beam_python3.11_sdk:2.72.0

COPY requirements-records.lock /tmp/requirements-records.lock
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements-records.lock && rm /tmp/requirements-records.lock

COPY records /opt/imagenet-records/records
COPY pipeline /opt/imagenet-records/pipeline
ENV PYTHONPATH=/opt/imagenet-records
