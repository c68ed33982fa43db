"""Data: dataset loaders, labels, sampling and the tf.data pipeline.

Files -> ``datasets`` (one ``SampleSet`` per split) -> ``sampling`` (epoch
schedule) -> ``pipeline`` (tf.data batches) -> the model.
"""
