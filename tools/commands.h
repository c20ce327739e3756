/*
 * Subcommands of the `phiaudit` tool implemented outside tools/phiaudit.c.
 *
 * Each function takes the subcommand's arguments with argv[0] = the subcommand name,
 * handles its own --help, prints results on stdout and one-line errors on stderr (never
 * PHI), and returns the process exit status:
 *   0 intact, 1 tampered, 2 incomplete, 3 usage/key/format/I/O error
 * (the verdicts of <phiaudit_reader.h>; docs/FORMAT.md §9.1).
 *
 * The *_help arrays are NULL-terminated lists of text blocks (man-page style), printed in
 * order, for `phiaudit help NAME` and the command table of tools/phiaudit.c.
 */
#ifndef PHIAUDIT_TOOLS_COMMANDS_H
#define PHIAUDIT_TOOLS_COMMANDS_H

int phiaudit_cmd_verify(int argc, char **argv);
int phiaudit_cmd_decrypt(int argc, char **argv);
int phiaudit_cmd_query(int argc, char **argv);

extern const char *const phiaudit_cmd_verify_help[];
extern const char *const phiaudit_cmd_decrypt_help[];
extern const char *const phiaudit_cmd_query_help[];

#endif /* PHIAUDIT_TOOLS_COMMANDS_H */
