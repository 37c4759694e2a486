/* auth/pwlist.h: the list of commonly used passwords a new password is checked against
 * (NIST SP 800-63B §5.1.1.2: "passwords obtained from previous breach corpuses ... commonly-
 * used ... passwords" are refused when one is set). The list is Openwall's password.lst from
 * Debian's john-data, embedded at build time (auth/embed_common_passwords.py): about 3,400
 * passwords, lower-cased, sorted. Used where a password is set (registration, change, reset),
 * never at login. */
#ifndef TESSERA_AUTH_PWLIST_H
#define TESSERA_AUTH_PWLIST_H

#include <stdbool.h>
#include <stddef.h>

/* The embedded list: sorted bytewise, ASCII lower case, no duplicates. */
extern const char *const pwlist_words[];
extern const size_t pwlist_count;
extern const size_t pwlist_longest;

/* True when pw[0..len), compared without regard to ASCII case, is on the list. */
bool pwlist_is_common(const char *pw, size_t len);

#endif
