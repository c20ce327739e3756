// cpp_demo: audit two chart accesses from C++ with the RAII wrapper (include/phiaudit.hpp).
//
//   cpp_demo KEYFILE LOGFILE     (KEYFILE is created if it does not exist)
//
// The first access succeeds; the second throws inside its scope, so its record is sealed
// with outcome 8 (serious failure) while the exception propagates.
#include <phiaudit.hpp>

#include <cstdio>
#include <stdexcept>

static void show_chart(const std::string &patient)
{
    if (patient == "p-404")
        throw std::runtime_error("chart not found");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s KEYFILE LOGFILE\n", argv[0]);
        return 2;
    }
    try {
        if (std::FILE *f = std::fopen(argv[1], "r"))
            std::fclose(f);
        else
            phiaudit::detail::check(phiaudit_key_generate_file(argv[1], nullptr), "key file");

        phiaudit::Config cfg;
        cfg.app_name("cpp-demo").key_file(argv[1]).sink_uri(std::string("file:") + argv[2])
            .durability(phiaudit::Durability::Group);
        phiaudit::Logger audit(cfg);

        {
            phiaudit::Scope s(audit, "dr-house", "p-42", PHIAUDIT_ACTION_READ);
            s.purpose("TREAT").event_type("chart-view");
            show_chart("p-42");
        } // sealed here with outcome 0

        try {
            phiaudit::Scope s(audit, "dr-house", "p-404", PHIAUDIT_ACTION_READ);
            show_chart("p-404");
        } catch (const std::runtime_error &e) {
            // the scope above was sealed with outcome 8 while this exception unwound it
            std::printf("access failed (%s); audited as outcome 8\n", e.what());
        }

        audit.close(); // throws phiaudit::Error if records could not be delivered
        std::printf("wrote 2 audit records to %s\n", argv[2]);
        return 0;
    } catch (const phiaudit::Error &e) {
        std::fprintf(stderr, "phiaudit error %d: %s\n", e.code(), e.what());
        return 1;
    }
}
