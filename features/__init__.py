"""Media to vectors: decoding, views, frozen encoders, stream families, the extraction run and the feature cache."""
