"""The media layer shared by the stream worker and the API: safe fetching, canonical URLs,
normalisation, fingerprints and matching. Library code only; no Kafka, no index."""
