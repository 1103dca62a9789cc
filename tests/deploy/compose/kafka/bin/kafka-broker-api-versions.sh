#!/bin/sh
# As the official image's bin/kafka-broker-api-versions.sh (compose's healthcheck runs it).
exec java -Xmx128m -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties \
    -cp '/opt/kafka/libs/*' kafka.admin.BrokerApiVersionsCommand "$@"
