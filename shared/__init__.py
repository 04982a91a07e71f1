"""The library the three demandscope services share: event contracts, the Kafka runtime, ops."""
