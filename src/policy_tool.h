/* `kiteq policy check DIR` and `kiteq policy call DIR HOOK ['JSON-ARGS']`: try a policies
 * folder from the shell with the broker's own code (docs/POLICIES.md, "Trying a policy"). */
#ifndef KQ_POLICY_TOOL_H
#define KQ_POLICY_TOOL_H
/* argv[0] is "policy". Returns the exit status: 0 when the folder loads (check) or the hook's
 * own answer was applied (call), 1 otherwise, 2 for a usage error. */
int kq_policy_tool(int argc, char **argv);
#endif
