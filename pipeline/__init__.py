"""The Beam job that turns ImageNet layouts into sharded TFRecords.

Kept free of imports so that light modules here (e.g. `pipeline.sample`) load
without pulling in apache_beam.
"""
