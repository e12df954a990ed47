/* Fixture of the module_edges test (never compiled): inside proto/ the generated types are
 * at home. */
#include "kite_remoting.pb-c.h"
#include "proto/codec.h"

static size_t header_size(const Protocol__Header *h) { return protocol__header__get_packed_size(h); }
