"""The box's side of MQTT, the last stage of the pipeline: the contract with the central (topics, payloads, JSON
Schemas), the link that publishes the event outbox and reads acks and gallery commands, the outbox's delivery state,
and the broker set-up (per-box credentials and the ACL)."""
