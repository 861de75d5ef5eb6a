#!/bin/sh
# The Kafka ACLs a service running exactly needs, and no others. Run it as a Kafka
# administrator, naming the parts the service uses:
#
#   PRINCIPAL=User:orders INPUT_TOPICS="orders" GROUP=orders-projector \
#   OUTPUT_TOPICS="order-totals" TRANSACTIONAL_ID=orders-projector \
#   BOOTSTRAP=broker:9093 ADMIN_CONFIG=admin.properties \
#   sh kafka-acls.sh handler kafka-mode
#
# Parts:
#   handler     every handler, both modes: INPUT_TOPICS, GROUP
#   kafka-mode  a Kafka-mode handler: OUTPUT_TOPICS (its dead-letter topic too, if it
#               has one), TRANSACTIONAL_ID (the runtime's `transactional_id`)
#   relay       the outbox relay: RELAY (its name), RELAY_TOPICS (every topic records
#               are emitted to, and Database-mode dead-letter topics), POSITIONS_TOPIC
#               (default exactly-outbox-positions)
#   tool        the `exactly` tool, reading: TOOL_TOPICS, GROUP, TRANSACTIONAL_ID
#   tool-admin  the `exactly` tool, changing: `offsets set/reset` of GROUP on
#               TOOL_TOPICS, `transactions abort` of TRANSACTIONAL_ID
#
# Read and Write each imply Describe. Create the topics as an administrator.
set -eu
KAFKA_ACLS=${KAFKA_ACLS:-kafka-acls.sh}

acl() {
    "$KAFKA_ACLS" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \
        --add --allow-principal "$PRINCIPAL" "$@"
}

# `--topic T` for each topic in the space-separated list $1.
topics() {
    for topic in $1; do printf -- '--topic %s ' "$topic"; done
}

for part in "$@"; do
    case "$part" in
    handler)
        # Fetch its input (Read on the topics) in its group (join, commit offsets: Read
        # on the group; a Kafka-mode transaction's offsets need the same).
        acl --operation Read $(topics "$INPUT_TOPICS") --group "$GROUP"
        ;;
    kafka-mode)
        # Write its outputs, in transactions under its transactional id. A prefixed ACL
        # matches the id, the `-{group}` a runtime with several Kafka-mode handlers
        # appends, and the `.2` of each group's second producer.
        acl --operation Write $(topics "$OUTPUT_TOPICS")
        acl --operation Write --transactional-id "$TRANSACTIONAL_ID" --resource-pattern-type prefixed
        ;;
    relay)
        positions=${POSITIONS_TOPIC:-exactly-outbox-positions}
        acl --operation Write $(topics "$RELAY_TOPICS")
        acl --operation Read --operation Write --topic "$positions"
        acl --operation Write --transactional-id "$RELAY"
        # The consumer that reads the relay's position back carries this group id,
        # though it never joins the group.
        acl --operation Describe --group "exactly-relay-reader-$RELAY"
        ;;
    tool)
        # `lag`, `offsets show`: the ends of the log, and a Kafka-mode group's offsets.
        # `transactions list`: the transactions under the id.
        acl --operation Describe $(topics "$TOOL_TOPICS") --group "$GROUP"
        acl --operation Describe --transactional-id "$TRANSACTIONAL_ID" --resource-pattern-type prefixed
        ;;
    tool-admin)
        acl --operation Read $(topics "$TOOL_TOPICS") --group "$GROUP"
        acl --operation Write --transactional-id "$TRANSACTIONAL_ID" --resource-pattern-type prefixed
        ;;
    *)
        echo "kafka-acls.sh: unknown part '$part' (handler, kafka-mode, relay, tool, tool-admin)" >&2
        exit 2
        ;;
    esac
done
