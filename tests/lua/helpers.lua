-- Shared by the specs of tests/lua (not a spec itself): folders of policies loaded through
-- the kiteq.policy module, i.e. the broker's own loader, sandbox and budgets.
local policy = require("kiteq.policy")

local M = {}

M.SHIPPED = "lua/policies"

-- A throw-away folder holding files = { ["routing.lua"] = "source", ... }; returns its path
-- and a function that removes it.
function M.folder(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
  for name, src in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(src)
    f:close()
  end
  return dir, function() os.execute("rm -rf '" .. dir .. "'") end
end

-- policy.load of a folder holding files (a loaded generation needs its files no more).
function M.load_files(files)
  local dir, remove = M.folder(files)
  local p, err = policy.load(dir)
  remove()
  return p, err
end

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- An example of lua/policies/examples loaded as the policy file `as` ("routing.lua", ...),
-- as the example's header says to install it.
function M.load_example(file, as)
  return assert(M.load_files({ [as] = M.read(M.SHIPPED .. "/examples/" .. file) }))
end

function M.bind(group, message_type, bind_type, persistent)
  return { group = group, message_type = message_type, bind_type = bind_type,
           persistent = persistent ~= false }
end

-- The group names of a routing answer, in order.
function M.groups(answer)
  local out = {}
  for _, g in ipairs(answer.groups) do out[#out + 1] = g.group end
  return out
end

-- Calls a hook and fails the test unless the policy's own answer was applied as given.
function M.call(p, hook, args)
  local answer, problem = p:call(hook, args)
  assert(problem == nil, problem)
  return answer
end

return M
