/* core/precis.h: the PRECIS profiles Tessera applies to what people type (RFC 8264, RFC 8265),
 * over GNU libunistring. One normalisation at every place a name or a password is set and
 * every place it is compared (SECURITY P06, P07).
 *
 * precis_username: RFC 8265 §3.3 UsernameCaseMapped, in §3.3.2's order:
 *   1. width mapping: a fullwidth or halfwidth code point becomes its <wide>/<narrow>
 *      decomposition ("ａｌｉｃｅ" is "alice", as NFKC would make it), nothing else of NFKC;
 *   2. precis_username_lookup only (a name typed to log in): surrounding spaces (any Zs,
 *      after 1, so U+3000 too) are trimmed. precis_username (a name being set: sign-up,
 *      PATCH /me, the admin CLI) refuses them as spaces, as auth/ always did, so no stored
 *      name has them and " alice " at login can only mean "alice";
 *   3. case mapping: Unicode toLowerCase (no language tailoring);
 *   4. NFC;
 *   5. refused (-TE_INVAL) what PRECIS IdentifierClass refuses (RFC 8264 §9): invalid
 *      UTF-8 (surrogates, overlongs included), controls, format characters, unassigned,
 *      spaces inside, symbols and non-ASCII punctuation, code points with a compatibility
 *      decomposition left after step 1 (HasCompat, §9.17: "ﬁ", "²", "Ⅳ": visually one name,
 *      two accounts), an empty result. ASCII 0x21..0x7E and letters, marks and digits of
 *      every script pass. Confusables (Cyrillic "а") are NOT folded: "аlice" is another
 *      account (RFC 8264 §12.5 leaves visually similar characters to policy).
 *
 * precis_password: RFC 8265 §4.2 OpaqueString: every non-ASCII space (Zs) becomes U+0020,
 * then NFC ("é" typed as U+00E9 or as e + U+0301 is one password); no case or width
 * mapping. Refused: invalid UTF-8, control characters (Cc: FreeformClass disallows them),
 * an empty result. Unassigned code points are kept (a new emoji typed today must not be
 * refused by an older libunistring) and so are default-ignorables: a password is opaque.
 *
 * Both write a NUL-terminated result of at most cap - 1 bytes into out; -TE_NOMEM when it
 * does not fit. Inputs over PRECIS_INPUT_MAX bytes are refused (-TE_INVAL) before any work.
 * Thread-safe (shards and worker threads call them). libunistring may allocate a transient
 * work buffer for a long run of combining marks; it is freed before returning. */
#ifndef TESSERA_CORE_PRECIS_H
#define TESSERA_CORE_PRECIS_H

#include <stddef.h>

/* The longest input normalised: the longest field that is, a password (crypto/password.h
 * PASSWORD_INPUT_MAX, 1024); a username is 128 bytes, an address 320. */
#define PRECIS_INPUT_MAX 1024
/* The room a result may need: NFC and toLowerCase grow UTF-8 by at most 3x (Unicode
 * Standard Annex #15 §9, "Stream-Safe"; U+0130 is the only lower-casing that grows). */
#define PRECIS_EXPANSION_MAX 3
#define PRECIS_OUTPUT_MAX (PRECIS_INPUT_MAX * PRECIS_EXPANSION_MAX + 1)

/* RFC 8265 §3.3 (above), for a name being set. 0, -TE_INVAL (refused) or -TE_NOMEM (out too
 * small). */
int precis_username(const char *in, size_t len, char *out, size_t cap, size_t *out_len);
/* The same for a name being looked up: surrounding spaces trimmed first (step 2). */
int precis_username_lookup(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

/* RFC 8265 §4.2 (above). 0, -TE_INVAL (refused) or -TE_NOMEM (out too small). */
int precis_password(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

#endif
