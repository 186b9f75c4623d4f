#include "report.h"

#include <stdarg.h>
#include <stdio.h>

/* OpenVINO's messages can run to pages; their first 600 characters say what went wrong. */
#define MAX_MESSAGE 600

int fail(const char *format, ...) {
    char message[MAX_MESSAGE];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    /* One line: runs of whitespace (OpenVINO's messages hold newlines) become one space. */
    char *out = message;
    int blank = 0;
    for (const char *in = message; *in; ++in) {
        int space = (*in == '\n' || *in == '\r' || *in == '\t' || *in == ' ');
        if (space && (blank || out == message)) continue;
        *out++ = space ? ' ' : *in;
        blank = space;
    }
    if (out > message && out[-1] == ' ') --out;
    *out = '\0';
    fprintf(stderr, "%s: %s%s\n", PROGRAM, message, length >= MAX_MESSAGE ? " ..." : "");
    return -1;
}
