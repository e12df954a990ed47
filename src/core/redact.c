/* kq_redact: finds secret-looking keys in free text. The text is short (a log line, an error
 * message, a URI), so a plain scan per call is enough. */
#include "core/redact.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char *const SECRET_WORDS[] = {"pass", "pwd", "secret", "token"};

static bool key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

static bool value_end(char c)
{
    return c == '\0' || c == '&' || isspace((unsigned char)c) || c == '"' || c == '\'' ||
           c == ',' || c == ')' || c == ';';
}

/* Does the key that ends just before text[eq] (an '=') name a secret? */
static bool secret_key(const char *text, size_t eq)
{
    size_t start = eq;
    while (start > 0 && key_char(text[start - 1]))
        start--;
    for (size_t w = 0; w < sizeof SECRET_WORDS / sizeof SECRET_WORDS[0]; w++) {
        size_t wl = strlen(SECRET_WORDS[w]);
        for (size_t i = start; i + wl <= eq; i++)
            if (strncasecmp(text + i, SECRET_WORDS[w], wl) == 0)
                return true;
    }
    return false;
}

/* At text[i] == ':' inside "scheme://user:password@": the length of "password", else 0. */
static size_t userinfo_password(const char *text, size_t i)
{
    size_t u = i;
    while (u > 0 && text[u - 1] != '/' && !value_end(text[u - 1]) && text[u - 1] != '@')
        u--;
    if (u < 3 || strncmp(text + u - 3, "://", 3) != 0 || u == i)
        return 0;
    size_t j = i + 1;
    while (!value_end(text[j]) && text[j] != '@' && text[j] != '/')
        j++;
    return text[j] == '@' ? j - i - 1 : 0;
}

/* Length of the secret value starting at text[i + 1], or 0 when text[i] starts none. */
static size_t secret_at(const char *text, size_t i)
{
    size_t n = 0;
    if (text[i] == '=' && i > 0 && secret_key(text, i))
        while (!value_end(text[i + 1 + n]))
            n++;
    else if (text[i] == ':')
        n = userinfo_password(text, i);
    return n;
}

bool kq_redact_needed(const char *text)
{
    for (size_t i = 0; text[i]; i++)
        if ((text[i] == '=' || text[i] == ':') && secret_at(text, i) > 0)
            return true;
    return false;
}

const char *kq_redact(const char *text, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return out;
    for (size_t i = 0; text[i] && o + 1 < outlen;) {
        out[o++] = text[i];
        size_t n = (text[i] == '=' || text[i] == ':') ? secret_at(text, i) : 0;
        i++;
        if (n == 0)
            continue;
        for (const char *r = KQ_REDACTED; *r && o + 1 < outlen; r++)
            out[o++] = *r;
        i += n;
    }
    out[o] = '\0';
    return out;
}
