-- Managed by mailstack: Nauthilus's password backend. The users and their crypt hashes
-- come from the inventory (/etc/nauthilus/users: address<TAB>hash); Nauthilus compares
-- the password with its own crypt. Which service a user may use is Dovecot's decision.

local nauthilus_password = require("nauthilus_password")

local USERS = "/etc/nauthilus/users"

local function hash_of(username)
  local wanted = string.lower(username)
  local file = io.open(USERS, "r")
  if not file then
    error("cannot read " .. USERS)  -- a temporary failure, never a login without a check
  end
  for line in file:lines() do
    local address, hash = line:match("^([^\t]+)\t(.+)$")
    if address == wanted then
      file:close()
      return hash
    end
  end
  file:close()
  return nil
end

function nauthilus_backend_verify_password(request)
  local result = nauthilus_backend_result.new()
  local hash = hash_of(request.username)
  if hash then
    result:user_found(true)
    result:account_field("account")
    result:attributes({ account = string.lower(request.username) })
    if not request.no_auth then
      local match, err = nauthilus_password.compare_passwords(hash, request.password)
      if err then
        error(err)
      end
      result:authenticated(match)
    end
  end
  return nauthilus_builtin.BACKEND_RESULT_OK, result
end

function nauthilus_backend_list_accounts()
  local accounts = {}
  local file = io.open(USERS, "r")
  if file then
    for line in file:lines() do
      table.insert(accounts, (line:match("^([^\t]+)\t")))
    end
    file:close()
  end
  return nauthilus_builtin.BACKEND_RESULT_OK, accounts
end
