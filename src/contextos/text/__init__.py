"""Text handling shared by the stores, retrieval and summaries: words, stopwords, query terms."""
