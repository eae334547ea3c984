"""Text -> image: class vocabularies (WordNet), training sentences, mapper, pipeline."""
