#!/usr/bin/env python3
"""auth/embed_common_passwords.py LIST OUT: writes OUT, a C file holding the passwords of LIST
(Openwall's password.lst from Debian's john-data, "assumed to be in the public domain"), lower-cased
(ASCII), without duplicates, sorted bytewise, for auth/pwlist.c's binary search. Lines starting
with "#!comment" are the list's own notes."""
import sys


def c_literal(word):
    out = []
    for b in word:
        ch = chr(b)
        out.append("\\%03o" % b if b < 0x20 or b > 0x7e or ch in '"\\?' else ch)
    return '"' + "".join(out) + '"'


def main(src, dst):
    with open(src, "rb") as f:
        lines = f.read().split(b"\n")
    words = sorted({l.rstrip(b"\r").lower() for l in lines
                    if l and not l.startswith(b"#!comment")})
    if len(words) < 1000:
        sys.exit("%s: only %d passwords; expected Openwall's list" % (src, len(words)))
    longest = max(len(w) for w in words)
    body = ["/* Generated from %s by auth/embed_common_passwords.py. */" % src,
            '#include "auth/pwlist.h"', "",
            "const char *const pwlist_words[] = {"]
    body += ["    %s," % c_literal(w) for w in words]
    body += ["};", "const size_t pwlist_count = %d;" % len(words),
             "const size_t pwlist_longest = %d;" % longest, ""]
    text = "\n".join(body)
    try:
        with open(dst) as f:
            if f.read() == text:
                return  # unchanged: no rebuild
    except OSError:
        pass
    with open(dst, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
