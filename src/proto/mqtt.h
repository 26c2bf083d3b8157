/*
 * MQTT payloads in the `value` format (docs/spec/MQTT.md, "Subscribing"):
 * a decimal number as text, optionally followed by one space and an
 * integer time in microseconds. Such a message becomes a line of line
 * protocol for the series `mqtt,topic=<topic> value` (the topic escaped
 * as a tag value), at the given time or the receive time, so that it takes
 * the line protocol's one path (names, ids, the commit pipeline).
 *
 * Pure: no I/O, no allocation, no global state; payload and topic are
 * hostile and never read outside the lengths given.
 *
 * The number: [-+]?(digits[.digits*]|.digits)([eE][-+]?digits)?, the line
 * protocol's float literal (no `nan`, `inf`, hex or integer suffix). The
 * time: -?digits, at most 19 digits, whose nanoseconds fit an int64. One
 * '\n' or "\r\n" may end the payload; nothing else may follow.
 * The topic: 1 to 1,024 bytes with no control byte (below 0x20, 0x7f) and
 * no backslash (line protocol has no escape for a backslash before `,`,
 * `=` or a space, so such a topic could not come back as itself).
 */
#ifndef SL_PROTO_MQTT_H
#define SL_PROTO_MQTT_H

#include <stddef.h>
#include <stdint.h>

#define SL_MQTT_TOPIC_MAX 1024u /* bytes of a topic taken (MQTT allows 65,535) */
/* The longest line sl_mqtt_value_line writes: the series, the number, the time. */
#define SL_MQTT_LINE_MAX(payload_len) (2u * SL_MQTT_TOPIC_MAX + 64u + (payload_len))

enum sl_mqtt_error {
    SL_MQTT_BAD_NUMBER = 1, /* the payload does not start with a number */
    SL_MQTT_BAD_TIME = 2,   /* what follows the number is not " <integer time>" */
    SL_MQTT_BAD_TOPIC = 3,  /* empty, too long, a control byte or a backslash */
    SL_MQTT_TOO_LONG = 4,   /* the line does not fit the caller's buffer */
};
#define SL_MQTT_ERROR_COUNT 5 /* 1..4 used */

/* "bad_number", "bad_time", "bad_topic", "too_long" for a negated or positive code. */
const char *sl_mqtt_error_name(int error);

/*
 * The line protocol line (nanosecond precision, '\n' included) for a `value`
 * payload received on `topic` at now_us: `mqtt,topic=<escaped> value=<the
 * number as written> <ns>\n`. Returns its length, or a negated enum
 * sl_mqtt_error (nothing useful in out then).
 */
long sl_mqtt_value_line(const char *topic, size_t topic_len, const uint8_t *payload,
                        size_t payload_len, int64_t now_us, char *out, size_t cap);

#endif
