"""The one Kafka runtime every service uses: settings, codec, producer, consumer runner."""
