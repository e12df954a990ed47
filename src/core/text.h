/* Showing bytes to a person (text or base64), and reading hex digits. */
#ifndef KQ_CORE_TEXT_H
#define KQ_CORE_TEXT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when p[0..n) is valid UTF-8 without control characters (tab, CR, LF allowed):
 * such bytes can be shown as a JSON string. */
bool kq_text_printable(const uint8_t *p, size_t n);

/* Standard base64 with padding; malloc'd, NUL-terminated; NULL on ENOMEM. */
char *kq_base64(const uint8_t *p, size_t n);

/* The value of hex digit c (0-9, a-f, A-F), -1 when c is none. */
int kq_hex_digit(char c);
#endif
