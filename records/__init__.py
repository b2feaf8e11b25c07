"""The on-disk contract between the records job (pipeline/) and its readers (estimator/).

Everything a writer and a reader must agree on lives here, and nothing here
imports Apache Beam, so a trainer can depend on it without the job's stack.
"""
