/* Produce throughput of librdkafka through a Kafka listener, from C: no interpreter loop
 * around each record, so the broker, not the client, sets the pace. COUNT records of SIZE
 * bytes, no key, acks=1, linger 5 ms, BATCH_BYTES batches (the settings of
 * librdkafka_perf.py). VALUES=random sends incompressible values (4,096 random ones in turn)
 * instead of one repeated byte. Prints one line in librdkafka_perf.py's format; exits 1 if any
 * record was not delivered.
 * Usage: rdkafka_perf BOOTSTRAP TOPIC COUNT SIZE [BATCH_BYTES]
 * Built by tests/bench/kafka-peer.sh against the librdkafka that confluent-kafka bundles. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RANDOM_VALUES 4096

static long delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    (void)opaque;
    if (message->err) {
        if (failed++ == 0)
            fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(message->err));
    } else {
        delivered++;
    }
}

static void set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", name, value, why);
        exit(2);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC COUNT SIZE [BATCH_BYTES]\n", argv[0]);
        return 2;
    }
    const char *topic_name = argv[2];
    long count = atol(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    const char *batch = argc > 5 ? argv[5] : "1048576";
    const char *kind = getenv("VALUES");
    int random_values = kind && strcmp(kind, "random") == 0;
    size_t values = random_values ? RANDOM_VALUES : 1;
    unsigned char *pool = malloc(values * size);
    if (!pool)
        return 2;
    unsigned long long x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < values * size; i++) {
        if (random_values) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            pool[i] = (unsigned char)x;
        } else {
            pool[i] = 'x';
        }
    }

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", argv[1]);
    set(conf, "acks", "1");
    set(conf, "linger.ms", "5");
    set(conf, "batch.size", batch);
    set(conf, "queue.buffering.max.kbytes", "1048576");
    set(conf, "queue.buffering.max.messages", "1000000");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "creating the producer: %s\n", why);
        return 2;
    }
    rd_kafka_topic_t *topic = rd_kafka_topic_new(rk, topic_name, NULL);

    double start = now();
    for (long i = 0; i < count; i++) {
        /* No copy: the values live until the end, and librdkafka only reads them. */
        void *value = pool + (size_t)(i % (long)values) * size;
        while (rd_kafka_produce(topic, RD_KAFKA_PARTITION_UA, 0, value, size, NULL, 0, NULL) == -1) {
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(rd_kafka_last_error()));
                return 1;
            }
            rd_kafka_poll(rk, 10);
        }
        if (i % 1024 == 0)
            rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fprintf(stderr, "flush timed out with %d records unsent\n", rd_kafka_outq_len(rk));
    double elapsed = now() - start;
    printf("librdkafka produce: %ld records of %zu B in %.2fs: %.0f records/s, %.1f MB/s "
           "(C, acks=1, batch %s B, linger 5 ms; %ld delivered, %ld failed)\n",
           count, size, elapsed, count / elapsed, count * (double)size / elapsed / 1e6, batch, delivered, failed);
    rd_kafka_topic_destroy(topic);
    rd_kafka_destroy(rk);
    free(pool);
    return delivered == count && failed == 0 ? 0 : 1;
}
