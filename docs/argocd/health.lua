-- Argo CD health check for rollkeeper.io/RollingDeploy.
-- Healthy: the rollout is complete (Ready=True) for the current generation.
-- Suspended: spec.paused (no new node upgrades start).
-- Degraded: Stalled=True (a failed health check or artifact, an invalid spec, a conflict the
--           operator cannot resolve by itself).
-- Progressing: anything else (the operator has not observed the latest spec yet, or nodes are
--              still being upgraded).
local hs = {}
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end
local function msg(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = msg(condition("Ready"), "Rollout paused")
  return hs
end
if obj.status == nil or obj.status.observedGeneration == nil or obj.metadata.generation ~= obj.status.observedGeneration then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = msg(stalled, "Rollout stalled")
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = msg(ready, "Rollout complete")
  return hs
end
hs.status = "Progressing"
hs.message = msg(ready, "Rollout in progress")
return hs
