-- Argo CD health of a photopolicy.io/PhotoUpdatePolicy, from its status.
-- Argo CD runs this without the Lua string library, so it only compares
-- and concatenates strings. docs/gitops.md lists each state and the
-- verdict this script gives it.
local hs = {}

local function find_condition(conditions, condition_type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

-- "Reason: message", or just the reason when the message is empty.
local function describe(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status.conditions, "Ready")
local reconciling = find_condition(status.conditions, "Reconciling")
local stalled = find_condition(status.conditions, "Stalled")
local synced = find_condition(status.conditions, "Synced")

-- Stalled: the operator needs a human (spec, Secret, app registration or
-- permissions), including a Restore that cannot be written back.
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

-- Reconciling: a write not yet visible, a transient error or throttling;
-- the operator retries on its own.
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the Ready condition"
  return hs
end

if ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  -- With managementPolicy Observe the policy is healthy while the tenant
  -- differs: the drift is reported, never corrected.
  if synced ~= nil and synced.status == "False" then
    hs.message = describe(synced)
  else
    hs.message = describe(ready)
  end
  return hs
end

if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
