/* Address predicates shared by the config checks and the listeners (no I/O, no lookups). */
#ifndef KQ_CORE_ADDR_H
#define KQ_CORE_ADDR_H
#include <stdbool.h>

/* True when the host of "host:port" ("[v6]:port" too) is a loopback address: "localhost",
 * 127.0.0.0/8, ::1 or ::ffff:127.x.x.x. Anything else, including names that would need a
 * lookup and unparsable text, is beyond loopback (the safe answer). Any thread. */
bool kq_addr_is_loopback(const char *hostport);
#endif
