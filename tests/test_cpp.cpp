// Tests of the header-only C++ wrapper (include/phiaudit.hpp), built with -std=c++17.
// Plain assertions (no cmocka: it is a C framework); a failed CHECK exits non-zero.
#include <phiaudit.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

static int failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

namespace {

const std::array<uint8_t, PHIAUDIT_KEY_ID_LEN> kKeyId = {1, 2, 3, 4, 5, 6, 7, 8,
                                                        9, 10, 11, 12, 13, 14, 15, 16};
const std::array<uint8_t, PHIAUDIT_KEY_LEN> kKey = {
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f};

struct Harness {
    phiaudit::Sink mem = phiaudit::Sink::memory();
    phiaudit::Keyring kr;
    phiaudit::Config cfg;
    std::optional<phiaudit::Logger> lg;
    Harness()
    {
        kr.add(kKeyId, kKey);
        cfg.app_name("cpp-test").key(kKeyId, kKey).sink(mem);
        lg.emplace(cfg);
    }
    std::vector<std::string> data_records()
    {
        std::vector<std::string> out;
        for (auto &r : phiaudit::memory_records(*lg, mem, kr))
            if (r.find("\"event\":\"stream-") == std::string::npos)
                out.push_back(r);
        return out;
    }
};

bool has(const std::string &hay, const std::string &needle)
{
    return hay.find(needle) != std::string::npos;
}

void test_scope_success()
{
    Harness h;
    {
        phiaudit::Scope s(*h.lg, "dr-1", "p-1", PHIAUDIT_ACTION_READ);
        s.purpose("TREAT").event_type("chart").detail("note \"quoted\"").break_glass();
    }
    auto recs = h.data_records();
    CHECK(recs.size() == 1);
    CHECK(has(recs[0], "\"action\":\"R\""));
    CHECK(has(recs[0], "\"outcome\":0"));
    CHECK(has(recs[0], "\"clinician\":\"dr-1\""));
    CHECK(has(recs[0], "\"patient\":\"p-1\""));
    CHECK(has(recs[0], "\"purpose\":\"TREAT\""));
    CHECK(has(recs[0], "\"break_glass\":true"));
    CHECK(has(recs[0], "\"detail\":\"note \\\"quoted\\\"\""));
}

void test_scope_exception_marks_failure()
{
    Harness h;
    bool caught = false;
    try {
        phiaudit::Scope s(*h.lg, "dr-2", "p-2", PHIAUDIT_ACTION_UPDATE);
        throw std::runtime_error("boom");
    } catch (const std::runtime_error &) {
        caught = true;
    }
    CHECK(caught);
    auto recs = h.data_records();
    CHECK(recs.size() == 1);
    CHECK(has(recs[0], "\"outcome\":8"));
    CHECK(has(recs[0], "\"action\":\"U\""));
}

// A scope created *inside* a destructor that runs during unwinding: one exception was already
// in flight at construction, so the scope itself ends normally (outcome 0). This is why the
// guard compares std::uncaught_exceptions() with its value at construction.
struct LogsInDestructor {
    phiaudit::Logger *lg;
    ~LogsInDestructor() { phiaudit::Scope s(*lg, "dr-3", "p-3", PHIAUDIT_ACTION_READ); }
};

void test_scope_during_unwinding_is_success()
{
    Harness h;
    try {
        LogsInDestructor d{&*h.lg};
        throw std::runtime_error("unwind");
    } catch (const std::runtime_error &) {
    }
    auto recs = h.data_records();
    CHECK(recs.size() == 1);
    CHECK(has(recs[0], "\"outcome\":0"));
}

void test_set_outcome_and_explicit_end()
{
    Harness h;
    {
        phiaudit::Scope s(*h.lg, "dr-4", "p-4", PHIAUDIT_ACTION_DELETE);
        s.outcome(PHIAUDIT_OUTCOME_MINOR_FAILURE);
    }
    phiaudit::Scope s2(*h.lg, "dr-4", "p-5", PHIAUDIT_ACTION_CREATE);
    s2.end(PHIAUDIT_OUTCOME_MAJOR_FAILURE);
    CHECK(s2.ended());
    bool threw = false;
    try {
        s2.end();
    } catch (const phiaudit::Error &e) {
        threw = e.code() == PHIAUDIT_E_STATE;
    }
    CHECK(threw);
    auto recs = h.data_records();
    CHECK(recs.size() == 2);
    CHECK(has(recs[0], "\"outcome\":4"));
    CHECK(has(recs[1], "\"outcome\":12"));
}

template <typename F> int error_code_of(F &&f)
{
    try {
        f();
    } catch (const phiaudit::Error &e) {
        return e.code();
    }
    return 0;
}

void test_errors()
{
    Harness h;
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, "", "p", 'R'); }) == PHIAUDIT_E_EMPTY);
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, "c", "p", 'X'); }) == PHIAUDIT_E_INVALID);
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, std::string("c\0d", 3), "p", 'R'); }) ==
          PHIAUDIT_E_BAD_CHAR);
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, "c\n", "p", 'R'); }) == PHIAUDIT_E_BAD_CHAR);
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, std::string(257, 'a'), "p", 'R'); }) ==
          PHIAUDIT_E_TOO_LONG);
    CHECK(error_code_of([&] { phiaudit::Scope s(*h.lg, "c", "\xff", 'R'); }) == PHIAUDIT_E_UTF8);
    CHECK(error_code_of([&] {
              phiaudit::Scope s(*h.lg, "c", "p", 'R');
              s.outcome(5);
          }) == PHIAUDIT_E_INVALID);
    // Error carries the strerror text.
    try {
        phiaudit::Scope s(*h.lg, "", "p", 'R');
    } catch (const phiaudit::Error &e) {
        CHECK(std::strstr(e.what(), phiaudit_strerror(PHIAUDIT_E_EMPTY)) != nullptr);
    }
    // Opening with no key at all fails with an exception, not a crash.
    phiaudit::Config bad;
    bad.app_name("x").sink_uri("memory:");
    CHECK(error_code_of([&] { phiaudit::Logger l(bad); }) == PHIAUDIT_E_KEY);
    phiaudit::Config bad_uri;
    bad_uri.app_name("x").key(kKeyId, kKey).sink_uri("nosuchscheme:x");
    CHECK(error_code_of([&] { phiaudit::Logger l(bad_uri); }) == PHIAUDIT_E_URI);
    // No record was produced by any failed begin; the one scope that began (and whose
    // bad outcome() threw inside it) was sealed as a serious failure.
    auto recs = h.data_records();
    CHECK(recs.size() == 1);
    CHECK(recs.size() == 1 && has(recs[0], "\"outcome\":8"));
}

void test_log_event_and_threads()
{
    Harness h;
    phiaudit::Event ev;
    ev.clinician = "dr-5";
    ev.patient = "p-5";
    ev.action = PHIAUDIT_ACTION_EXECUTE;
    ev.duration_us = 1500;
    ev.purpose = "ETREAT";
    h.lg->log_event(ev);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++)
        ts.emplace_back([&h, t] {
            for (int i = 0; i < 250; i++) {
                phiaudit::Scope s(*h.lg, "dr-t" + std::to_string(t), "p-" + std::to_string(i));
            }
        });
    for (auto &t : ts)
        t.join();
    auto recs = h.data_records();
    CHECK(recs.size() == 1001);
    CHECK(has(recs[0], "\"duration_us\":1500"));
    CHECK(h.lg->take_scope_error() == 0);
    phiaudit_stats st = h.lg->stats();
    CHECK(st.records_sealed == 1001);
}

void test_move_and_close()
{
    Harness h;
    phiaudit::Logger moved(std::move(*h.lg));
    CHECK(!*h.lg);
    {
        phiaudit::Scope a(moved, "dr-6", "p-6");
        phiaudit::Scope b(std::move(a));
        CHECK(a.ended());
        CHECK(!b.ended());
    }
    moved.flush();
    size_t frames = h.mem.count(); // OPEN + 1 DATA
    CHECK(frames == 2);
    moved.close();
    moved.close(); // idempotent
    CHECK(h.mem.count() == 3); // + CLOSE
    auto last = h.kr.open(h.mem.frame(2));
    CHECK(has(last, "\"event\":\"stream-close\""));
    CHECK(has(last, "\"records\":1"));
}

} // namespace

int main()
{
    test_scope_success();
    test_scope_exception_marks_failure();
    test_scope_during_unwinding_is_success();
    test_set_outcome_and_explicit_end();
    test_errors();
    test_log_event_and_threads();
    test_move_and_close();
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("all C++ wrapper tests passed\n");
    return 0;
}
