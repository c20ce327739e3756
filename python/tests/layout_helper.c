/* Prints the C layout (size and every field offset) of the public structs the Python binding
 * mirrors with ctypes, as JSON. python/tests/test_layout.py compares it with the ctypes
 * Structures, so a header change that the binding does not follow fails `meson test`. */
#include <phiaudit.h>
#include <phiaudit_reader.h>

#include <stddef.h>
#include <stdio.h>

#define FIELD(T, f) printf("%s\"%s\": [%zu, %zu]", first ? "" : ", ", #f, offsetof(T, f), \
                           sizeof(((T *)0)->f)), first = 0
#define BEGIN(T) printf("%s\"" #T "\": {\"__size__\": [0, %zu], ", sep, sizeof(T)), first = 1, sep = ", "
#define END() printf("}")

int main(void)
{
    const char *sep = "";
    int first;
    printf("{");
    BEGIN(phiaudit_config);
    FIELD(phiaudit_config, version);
    FIELD(phiaudit_config, durability);
    FIELD(phiaudit_config, flush_interval_ms);
    FIELD(phiaudit_config, flags);
    FIELD(phiaudit_config, payload_format);
    FIELD(phiaudit_config, reserved0);
    FIELD(phiaudit_config, max_queue_bytes);
    FIELD(phiaudit_config, max_block_ms);
    FIELD(phiaudit_config, reserved1);
    FIELD(phiaudit_config, app_name);
    FIELD(phiaudit_config, host_name);
    FIELD(phiaudit_config, key_file);
    FIELD(phiaudit_config, key);
    FIELD(phiaudit_config, key_id);
    FIELD(phiaudit_config, key_callback);
    FIELD(phiaudit_config, key_callback_ctx);
    FIELD(phiaudit_config, sink_uris);
    FIELD(phiaudit_config, sink_uri_count);
    FIELD(phiaudit_config, sinks);
    FIELD(phiaudit_config, sink_count);
    FIELD(phiaudit_config, diag);
    FIELD(phiaudit_config, diag_ctx);
    END();
    BEGIN(phiaudit_event);
    FIELD(phiaudit_event, version);
    FIELD(phiaudit_event, action);
    FIELD(phiaudit_event, outcome);
    FIELD(phiaudit_event, break_glass);
    FIELD(phiaudit_event, start_us);
    FIELD(phiaudit_event, duration_us);
    FIELD(phiaudit_event, clinician_id);
    FIELD(phiaudit_event, patient_id);
    FIELD(phiaudit_event, event_type);
    FIELD(phiaudit_event, event_subtype);
    FIELD(phiaudit_event, purpose);
    FIELD(phiaudit_event, detail);
    END();
    BEGIN(phiaudit_stats);
    FIELD(phiaudit_stats, version);
    FIELD(phiaudit_stats, sink_failing);
    FIELD(phiaudit_stats, records_sealed);
    FIELD(phiaudit_stats, records_written);
    FIELD(phiaudit_stats, queued_bytes);
    FIELD(phiaudit_stats, sink_errors);
    FIELD(phiaudit_stats, streams);
    END();
    BEGIN(phiaudit_header);
    FIELD(phiaudit_header, version);
    FIELD(phiaudit_header, suite);
    FIELD(phiaudit_header, type);
    FIELD(phiaudit_header, flags);
    FIELD(phiaudit_header, frame_len);
    FIELD(phiaudit_header, key_id);
    FIELD(phiaudit_header, stream_id);
    FIELD(phiaudit_header, seq);
    FIELD(phiaudit_header, time_us);
    FIELD(phiaudit_header, epoch);
    FIELD(phiaudit_header, prev_link);
    FIELD(phiaudit_header, bi_patient);
    FIELD(phiaudit_header, bi_clinician);
    END();
    BEGIN(phiaudit_reader_record);
    FIELD(phiaudit_reader_record, header);
    FIELD(phiaudit_reader_record, status);
    FIELD(phiaudit_reader_record, reserved);
    FIELD(phiaudit_reader_record, frame);
    FIELD(phiaudit_reader_record, frame_len);
    FIELD(phiaudit_reader_record, payload);
    FIELD(phiaudit_reader_record, payload_len);
    FIELD(phiaudit_reader_record, source_index);
    FIELD(phiaudit_reader_record, offset);
    END();
    BEGIN(phiaudit_range);
    FIELD(phiaudit_range, first);
    FIELD(phiaudit_range, last);
    END();
    BEGIN(phiaudit_stream_report);
    FIELD(phiaudit_stream_report, stream_id);
    FIELD(phiaudit_stream_report, key_id);
    FIELD(phiaudit_stream_report, verdict);
    FIELD(phiaudit_stream_report, flags);
    FIELD(phiaudit_stream_report, records);
    FIELD(phiaudit_stream_report, authenticated);
    FIELD(phiaudit_stream_report, first_seq);
    FIELD(phiaudit_stream_report, last_seq);
    FIELD(phiaudit_stream_report, first_time_us);
    FIELD(phiaudit_stream_report, last_time_us);
    FIELD(phiaudit_stream_report, modified);
    FIELD(phiaudit_stream_report, unknown_key);
    FIELD(phiaudit_stream_report, duplicates);
    FIELD(phiaudit_stream_report, conflicts);
    FIELD(phiaudit_stream_report, reordered);
    FIELD(phiaudit_stream_report, chain_breaks);
    FIELD(phiaudit_stream_report, misplaced);
    FIELD(phiaudit_stream_report, missing_records);
    FIELD(phiaudit_stream_report, missing_range_count);
    FIELD(phiaudit_stream_report, missing_ranges);
    FIELD(phiaudit_stream_report, missing_ranges_len);
    END();
    BEGIN(phiaudit_source_report);
    FIELD(phiaudit_source_report, path);
    FIELD(phiaudit_source_report, error);
    FIELD(phiaudit_source_report, verdict);
    FIELD(phiaudit_source_report, bytes);
    FIELD(phiaudit_source_report, frames);
    FIELD(phiaudit_source_report, torn_tail_offset);
    FIELD(phiaudit_source_report, torn_tail_bytes);
    FIELD(phiaudit_source_report, damaged_bytes);
    FIELD(phiaudit_source_report, damaged_range_count);
    FIELD(phiaudit_source_report, damaged_ranges);
    FIELD(phiaudit_source_report, damaged_ranges_len);
    END();
    BEGIN(phiaudit_query);
    FIELD(phiaudit_query, version);
    FIELD(phiaudit_query, action);
    FIELD(phiaudit_query, patient_id);
    FIELD(phiaudit_query, clinician_id);
    FIELD(phiaudit_query, since_us);
    FIELD(phiaudit_query, until_us);
    END();
    printf(", \"limits\": {\"PHIAUDIT_MAX_ID_LEN\": %d, \"PHIAUDIT_MAX_CODE_LEN\": %d, "
           "\"PHIAUDIT_MAX_DETAIL_LEN\": %d, \"PHIAUDIT_KEY_LEN\": %d, \"PHIAUDIT_KEY_ID_LEN\": %d, "
           "\"PHIAUDIT_HEADER_LEN\": %d, \"PHIAUDIT_MAX_FRAME_LEN\": %d, "
           "\"PHIAUDIT_CONFIG_VERSION\": %d, \"PHIAUDIT_EVENT_VERSION\": %d, "
           "\"PHIAUDIT_STATS_VERSION\": %d, \"PHIAUDIT_E_NOT_FOUND\": %d}",
           PHIAUDIT_MAX_ID_LEN, PHIAUDIT_MAX_CODE_LEN, PHIAUDIT_MAX_DETAIL_LEN, PHIAUDIT_KEY_LEN,
           PHIAUDIT_KEY_ID_LEN, PHIAUDIT_HEADER_LEN, PHIAUDIT_MAX_FRAME_LEN,
           PHIAUDIT_CONFIG_VERSION, PHIAUDIT_EVENT_VERSION, PHIAUDIT_STATS_VERSION,
           PHIAUDIT_E_NOT_FOUND);
    printf("}\n");
    return 0;
}
