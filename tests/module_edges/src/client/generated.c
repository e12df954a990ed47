/* Fixture of the module_edges test (never compiled): the generated protobuf types and
 * protobuf-level codec header stay inside proto/, even where the module may call proto. */
#include "proto/codec.h"
#include "proto/wire.h"

static int topic_len(const Protocol__Header *h) { return (int)strlen(h->topic); }
