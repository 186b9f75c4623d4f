/* One-line error reports, as every dino-edge command prints them: "dino_embed: reason". */
#ifndef DINO_REPORT_H
#define DINO_REPORT_H

#define PROGRAM "dino_embed"

#if defined(__GNUC__)
#define DINO_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DINO_PRINTF(fmt, args)
#endif

/* Prints "dino_embed: <message>" on stderr as one line (newlines in the message become spaces)
 * and returns -1, so that a failing step can end with `return fail(...)`. */
int fail(const char *format, ...) DINO_PRINTF(1, 2);

#endif
