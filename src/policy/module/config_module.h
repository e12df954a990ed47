/* kiteq.policy's load_config: a Lua config file through the broker's own config loader, for
 * the busted specs of the config files (tests/lua/config_spec.lua). */
#ifndef KQ_POLICY_MODULE_CONFIG_MODULE_H
#define KQ_POLICY_MODULE_CONFIG_MODULE_H
#include <lua.h>

/* policy.load_config(path [, cluster [, text]]) -> config | nil, "problems, one per line" */
int kq_module_load_config(lua_State *L);
#endif
