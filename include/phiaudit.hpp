/*
 * phiaudit.hpp — header-only C++17 RAII wrapper over the phiaudit C API.
 *
 *     phiaudit::Config cfg;
 *     cfg.app_name("ehr-web").key_file("/etc/ehr/audit.key")
 *        .sink_uri("file:/var/log/ehr/audit.pha").durability(phiaudit::Durability::Group);
 *     phiaudit::Logger audit(cfg);                 // throws phiaudit::Error
 *     {
 *         phiaudit::Scope s(audit, clinician, patient, PHIAUDIT_ACTION_READ);
 *         s.purpose("TREAT");
 *         show_chart(patient);                     // may throw
 *     }   // record sealed here: outcome 0, or 8 if an exception is unwinding through it
 *
 * Error handling (the choice, and why): failures are thrown as phiaudit::Error, a
 * std::runtime_error carrying the PHIAUDIT_E_* code (code()) and phiaudit_strerror() text
 * plus the logger's detail message. An audit record that could not be written is a
 * compliance event that must not be ignored by accident, and exceptions cannot be dropped
 * silently the way an unchecked std::error_code can. Destructors never throw: ~Scope() ends
 * the scope and, on failure, stores the code in the Logger (Logger::take_scope_error());
 * call Scope::end() explicitly where you need the error as an exception. ~Logger() closes
 * without throwing; call Logger::close() to see a close error.
 *
 * Scope outcome: a Scope remembers std::uncaught_exceptions() at construction; if more
 * exceptions are in flight when its destructor runs, the block is being left by an exception
 * and the record gets PHIAUDIT_OUTCOME_SERIOUS_FAILURE (8); otherwise the outcome set with
 * Scope::outcome() (default PHIAUDIT_OUTCOME_SUCCESS).
 *
 * Strings: std::string arguments must not contain '\0' (C would silently cut them there);
 * such arguments throw Error with PHIAUDIT_E_BAD_CHAR before reaching the library.
 *
 * Threads: as the C API (see phiaudit.h): one Logger may be used from many threads; a Scope
 * belongs to one thread at a time; Logger::close() and destruction must not race with other
 * calls. Moved-from objects are empty and may only be destroyed or assigned to.
 */
#ifndef PHIAUDIT_HPP
#define PHIAUDIT_HPP

#include "phiaudit.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace phiaudit {

/** A phiaudit call failed. code() is the negative PHIAUDIT_E_* value. Never contains PHI. */
class Error : public std::runtime_error {
public:
    Error(int code, const std::string &detail)
        : std::runtime_error(compose(code, detail)), code_(code)
    {
    }
    explicit Error(int code) : Error(code, std::string()) {}
    /** The PHIAUDIT_E_* code. */
    int code() const noexcept { return code_; }

private:
    static std::string compose(int code, const std::string &detail)
    {
        std::string s = phiaudit_strerror(code);
        if (!detail.empty() && detail != s)
            s += ": " + detail;
        return s;
    }
    int code_;
};

namespace detail {
/** Throw Error(rc) for a negative rc. */
inline void check(int rc, const char *what = nullptr)
{
    if (rc < 0)
        throw Error(rc, what ? std::string(what) : std::string());
}
/** A std::string as a C string, refusing embedded NULs. */
inline const char *cstr(const std::string &s, const char *what)
{
    if (s.find('\0') != std::string::npos)
        throw Error(PHIAUDIT_E_BAD_CHAR, std::string(what) + " contains a NUL character");
    return s.c_str();
}
inline const char *cstr(const std::optional<std::string> &s, const char *what)
{
    return s ? cstr(*s, what) : nullptr;
}
} // namespace detail

enum class Durability : uint32_t {
    None = PHIAUDIT_DURABILITY_NONE,
    Group = PHIAUDIT_DURABILITY_GROUP,
    Sync = PHIAUDIT_DURABILITY_SYNC,
};

/** Owning wrapper of a phiaudit_sink (e.g. the memory sink for tests). Move-only. */
class Sink {
public:
    Sink() = default;
    /** Adopt a sink opened with the C API (takes ownership). */
    explicit Sink(phiaudit_sink *s) noexcept : s_(s) {}
    /** Open a built-in sink from a URI. */
    static Sink open_uri(const std::string &uri)
    {
        phiaudit_sink *s = nullptr;
        detail::check(phiaudit_sink_open_uri(&s, detail::cstr(uri, "sink URI")), "sink open");
        return Sink(s);
    }
    /** A memory sink (test double). */
    static Sink memory()
    {
        phiaudit_sink *s = nullptr;
        detail::check(phiaudit_sink_memory_open(&s));
        return Sink(s);
    }
    Sink(Sink &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Sink &operator=(Sink &&o) noexcept
    {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    Sink(const Sink &) = delete;
    Sink &operator=(const Sink &) = delete;
    ~Sink() { reset(); }

    phiaudit_sink *get() const noexcept { return s_; }
    /** Memory sink: number of frames held. */
    size_t count() const noexcept { return phiaudit_sink_memory_count(s_); }
    /** Memory sink: copy of frame @p index. */
    std::vector<uint8_t> frame(size_t index) const
    {
        size_t len = 0;
        int rc = phiaudit_sink_memory_get(s_, index, nullptr, &len);
        if (rc != PHIAUDIT_E_TOO_LONG && rc != 0)
            detail::check(rc);
        std::vector<uint8_t> buf(len);
        detail::check(phiaudit_sink_memory_get(s_, index, buf.data(), &len));
        buf.resize(len);
        return buf;
    }
    /** Memory sink: drop all frames. */
    void clear() { detail::check(phiaudit_sink_memory_clear(s_)); }

private:
    void reset() noexcept { (void)phiaudit_sink_close(&s_); }
    phiaudit_sink *s_ = nullptr;
};

/** Owning wrapper of a phiaudit_keyring (reading side). Move-only. */
class Keyring {
public:
    Keyring() { detail::check(phiaudit_keyring_new(&kr_)); }
    Keyring(Keyring &&o) noexcept : kr_(std::exchange(o.kr_, nullptr)) {}
    Keyring &operator=(Keyring &&o) noexcept
    {
        if (this != &o) {
            phiaudit_keyring_free(&kr_);
            kr_ = std::exchange(o.kr_, nullptr);
        }
        return *this;
    }
    Keyring(const Keyring &) = delete;
    Keyring &operator=(const Keyring &) = delete;
    ~Keyring() { phiaudit_keyring_free(&kr_); }

    Keyring &add_file(const std::string &path)
    {
        detail::check(phiaudit_keyring_add_file(kr_, detail::cstr(path, "key file")), "key file");
        return *this;
    }
    Keyring &add(const std::array<uint8_t, PHIAUDIT_KEY_ID_LEN> &key_id,
                 const std::array<uint8_t, PHIAUDIT_KEY_LEN> &key)
    {
        detail::check(phiaudit_keyring_add(kr_, key_id.data(), key.data()));
        return *this;
    }
    /** Authenticate and decrypt one frame; returns the payload (JSON text). */
    std::string open(const std::vector<uint8_t> &frame)
    {
        std::string out(frame.size(), '\0');
        size_t len = 0;
        detail::check(phiaudit_frame_open(kr_, frame.data(), frame.size(),
                                          reinterpret_cast<uint8_t *>(&out[0]), out.size(),
                                          &len));
        out.resize(len);
        return out;
    }
    phiaudit_keyring *get() const noexcept { return kr_; }

private:
    phiaudit_keyring *kr_ = nullptr;
};

/**
 * Logger configuration: a phiaudit_config plus storage for the strings it points to.
 * Setters return *this for chaining. Borrowed sinks (sink()) must outlive the Logger.
 */
class Config {
public:
    Config() { phiaudit_config_init(&c_); }

    Config &app_name(std::string v) { app_ = std::move(v); return *this; }
    Config &host_name(std::string v) { host_ = std::move(v); return *this; }
    Config &key_file(std::string v) { key_file_ = std::move(v); return *this; }
    /** Raw key and key ID (copied by the library at open; this copy is wiped on destruction). */
    Config &key(const std::array<uint8_t, PHIAUDIT_KEY_ID_LEN> &key_id,
                const std::array<uint8_t, PHIAUDIT_KEY_LEN> &key)
    {
        key_id_ = key_id;
        key_ = key;
        has_key_ = true;
        return *this;
    }
    Config &sink_uri(std::string uri) { uris_.push_back(std::move(uri)); return *this; }
    Config &sink(const Sink &s) { sinks_.push_back(s.get()); return *this; }
    Config &durability(Durability d) { c_.durability = static_cast<uint32_t>(d); return *this; }
    Config &flush_interval_ms(uint32_t ms) { c_.flush_interval_ms = ms; return *this; }
    Config &blind_index(bool on)
    {
        c_.flags = on ? (c_.flags | PHIAUDIT_FLAG_BLIND_INDEX) : (c_.flags & ~PHIAUDIT_FLAG_BLIND_INDEX);
        return *this;
    }
    Config &payload_format(uint32_t fmt) { c_.payload_format = fmt; return *this; }
    Config &max_queue_bytes(uint64_t n) { c_.max_queue_bytes = n; return *this; }
    Config &diag(phiaudit_diag_fn fn, void *ctx) { c_.diag = fn; c_.diag_ctx = ctx; return *this; }

    ~Config() { phiaudit_wipe(key_.data(), key_.size()); }
    Config(const Config &) = default;
    Config &operator=(const Config &) = default;

    /** The C struct, with pointers into this object (valid while it is unchanged). */
    const phiaudit_config &c_config()
    {
        uri_ptrs_.clear();
        for (const auto &u : uris_)
            uri_ptrs_.push_back(detail::cstr(u, "sink URI"));
        c_.app_name = app_.empty() ? nullptr : detail::cstr(app_, "app_name");
        c_.host_name = host_.empty() ? nullptr : detail::cstr(host_, "host_name");
        c_.key_file = key_file_.empty() ? nullptr : detail::cstr(key_file_, "key_file");
        c_.key = has_key_ ? key_.data() : nullptr;
        c_.key_id = has_key_ ? key_id_.data() : nullptr;
        c_.sink_uris = uri_ptrs_.empty() ? nullptr : uri_ptrs_.data();
        c_.sink_uri_count = uri_ptrs_.size();
        c_.sinks = sinks_.empty() ? nullptr : sinks_.data();
        c_.sink_count = sinks_.size();
        return c_;
    }

private:
    phiaudit_config c_{};
    std::string app_, host_, key_file_;
    std::array<uint8_t, PHIAUDIT_KEY_ID_LEN> key_id_{};
    std::array<uint8_t, PHIAUDIT_KEY_LEN> key_{};
    bool has_key_ = false;
    std::vector<std::string> uris_;
    std::vector<const char *> uri_ptrs_;
    std::vector<phiaudit_sink *> sinks_;
};

/** An already-timed event for Logger::log_event(). */
struct Event {
    std::string clinician, patient;
    char action = PHIAUDIT_ACTION_READ;
    int outcome = PHIAUDIT_OUTCOME_SUCCESS;
    bool break_glass = false;
    int64_t start_us = 0;    /**< 0 = now minus duration */
    int64_t duration_us = 0;
    std::optional<std::string> event_type, subtype, purpose, detail;
};

/** Owning wrapper of phiaudit_logger. Move-only; the destructor closes (never throws). */
class Logger {
public:
    explicit Logger(Config &cfg)
    {
        int rc = phiaudit_logger_open(&lg_, &cfg.c_config());
        if (rc < 0)
            throw Error(rc, phiaudit_logger_errmsg(nullptr));
    }
    Logger(Logger &&o) noexcept
        : lg_(std::exchange(o.lg_, nullptr)), scope_error_(o.scope_error_.exchange(0))
    {
    }
    Logger &operator=(Logger &&o) noexcept
    {
        if (this != &o) {
            (void)phiaudit_logger_close(&lg_);
            lg_ = std::exchange(o.lg_, nullptr);
            scope_error_ = o.scope_error_.exchange(0);
        }
        return *this;
    }
    Logger(const Logger &) = delete;
    Logger &operator=(const Logger &) = delete;
    ~Logger() { (void)phiaudit_logger_close(&lg_); }

    /** Close now (stream-close record, flush, sync). Throws Error(PHIAUDIT_E_SINK) if records
     *  could not be delivered; the logger is closed either way. Idempotent. */
    void close() { detail::check(phiaudit_logger_close(&lg_), "records not delivered at close"); }

    /** Wait until everything ended so far is written (and synced in GROUP/SYNC mode). */
    void flush()
    {
        int rc = phiaudit_logger_flush(lg_);
        if (rc < 0)
            throw Error(rc, phiaudit_logger_errmsg(lg_));
    }

    /** Seal one already-timed event. */
    void log_event(const Event &e)
    {
        phiaudit_event ev;
        phiaudit_event_init(&ev);
        ev.action = e.action;
        ev.outcome = e.outcome;
        ev.break_glass = e.break_glass ? 1 : 0;
        ev.start_us = e.start_us;
        ev.duration_us = e.duration_us;
        ev.clinician_id = detail::cstr(e.clinician, "clinician");
        ev.patient_id = detail::cstr(e.patient, "patient");
        ev.event_type = detail::cstr(e.event_type, "event_type");
        ev.event_subtype = detail::cstr(e.subtype, "subtype");
        ev.purpose = detail::cstr(e.purpose, "purpose");
        ev.detail = detail::cstr(e.detail, "detail");
        detail::check(phiaudit_log_event(lg_, &ev));
    }

    phiaudit_stats stats() const
    {
        phiaudit_stats st{};
        st.version = PHIAUDIT_STATS_VERSION;
        detail::check(phiaudit_logger_stats(lg_, &st));
        return st;
    }

    /** The last error a ~Scope() swallowed (0 if none), and reset it. Thread-safe. */
    int take_scope_error() noexcept { return scope_error_.exchange(0); }

    phiaudit_logger *get() const noexcept { return lg_; }
    explicit operator bool() const noexcept { return lg_ != nullptr; }

private:
    friend class Scope;
    phiaudit_logger *lg_ = nullptr;
    std::atomic<int> scope_error_{0};
};

/**
 * RAII scope guard: begins timing in the constructor, ends (seals the record) in the
 * destructor with outcome 8 if an exception is unwinding through it, else the outcome set
 * with outcome() (default 0). Move-only; must not outlive its Logger.
 */
class Scope {
public:
    Scope(Logger &lg, const std::string &clinician, const std::string &patient,
          char action = PHIAUDIT_ACTION_READ)
        : lg_(&lg), uncaught_(std::uncaught_exceptions())
    {
        detail::check(phiaudit_scope_begin(&s_, lg.lg_, detail::cstr(clinician, "clinician"),
                                           detail::cstr(patient, "patient"), action));
    }
    Scope(Scope &&o) noexcept
        : s_(std::exchange(o.s_, nullptr)), lg_(o.lg_), uncaught_(o.uncaught_),
          outcome_(o.outcome_)
    {
    }
    Scope &operator=(Scope &&) = delete;
    Scope(const Scope &) = delete;
    Scope &operator=(const Scope &) = delete;

    ~Scope()
    {
        if (!s_)
            return;
        int oc = std::uncaught_exceptions() > uncaught_ ? PHIAUDIT_OUTCOME_SERIOUS_FAILURE
                                                        : outcome_;
        int rc = phiaudit_scope_end(&s_, oc);
        if (rc < 0)
            lg_->scope_error_.store(rc);
    }

    Scope &event_type(const std::string &v) { return set(phiaudit_scope_set_event_type, v, "event_type"); }
    Scope &subtype(const std::string &v) { return set(phiaudit_scope_set_event_subtype, v, "subtype"); }
    Scope &purpose(const std::string &v) { return set(phiaudit_scope_set_purpose, v, "purpose"); }
    Scope &detail(const std::string &v) { return set(phiaudit_scope_set_detail, v, "detail"); }
    Scope &break_glass(bool on = true)
    {
        detail::check(phiaudit_scope_set_break_glass(live(), on ? 1 : 0));
        return *this;
    }
    /** Outcome for a normal (non-exceptional) end: 0, 4, 8 or 12. */
    Scope &outcome(int oc)
    {
        if (oc != 0 && oc != 4 && oc != 8 && oc != 12)
            throw Error(PHIAUDIT_E_INVALID, "outcome must be 0, 4, 8 or 12");
        outcome_ = oc;
        return *this;
    }
    /** End now with the set outcome; throws on failure (the scope is consumed anyway). */
    void end() { end(outcome_); }
    void end(int oc)
    {
        live();
        detail::check(phiaudit_scope_end(&s_, oc));
    }
    bool ended() const noexcept { return s_ == nullptr; }

private:
    phiaudit_scope *live() const
    {
        if (!s_)
            throw Error(PHIAUDIT_E_STATE, "scope already ended");
        return s_;
    }
    Scope &set(int (*fn)(phiaudit_scope *, const char *), const std::string &v, const char *what)
    {
        detail::check(fn(live(), detail::cstr(v, what)));
        return *this;
    }
    phiaudit_scope *s_ = nullptr;
    Logger *lg_;
    int uncaught_;
    int outcome_ = PHIAUDIT_OUTCOME_SUCCESS;
};

/** Test helper: flush @p lg, then decrypt every frame of memory sink @p mem with @p kr and
 *  return the payloads (JSON text), OPEN/CLOSE records included, in order. */
inline std::vector<std::string> memory_records(Logger &lg, const Sink &mem, Keyring &kr)
{
    lg.flush();
    std::vector<std::string> out;
    size_t n = mem.count();
    for (size_t i = 0; i < n; i++)
        out.push_back(kr.open(mem.frame(i)));
    return out;
}

} // namespace phiaudit

#endif /* PHIAUDIT_HPP */
