/* Test helper for kill9_test.sh: logs events in SYNC durability until killed, printing the
 * number of every event whose phiaudit_log_event() returned 0 — its acknowledgement that
 * the record is durable.
 *   ack_writer KEY_FILE SINK_URI */
#include "phiaudit.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *sinks[] = {argv[2]};
    phiaudit_config c;
    phiaudit_config_init(&c);
    c.app_name = "ack-writer";
    c.key_file = argv[1];
    c.sink_uris = sinks;
    c.sink_uri_count = 1;
    c.durability = PHIAUDIT_DURABILITY_SYNC;
    phiaudit_logger *lg = NULL;
    if (phiaudit_logger_open(&lg, &c) != 0)
        return 1;
    for (long i = 0;; i++) {
        char detail[32];
        snprintf(detail, sizeof detail, "ack-%ld", i);
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        ev.clinician_id = "dr-kill9";
        ev.patient_id = "MRN-KILL9";
        ev.detail = detail;
        if (phiaudit_log_event(lg, &ev) != 0)
            return 1;
        printf("%ld\n", i);
        fflush(stdout);
    }
}
