-- Argo CD health check for canopy.genaiops.io/PromptExperiment (Lua 5.1, as Argo CD runs it).
-- Progressing while it is being deleted (the operator restores the config first) or not yet observed.
-- Healthy: the test runs or has concluded. Suspended: a promotion awaits approval, or spec.suspend paused it.
-- Degraded: spec.abort ended the test, or the phase or the Degraded condition says so. Progressing: the rest.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  local promotion = obj.spec ~= nil and obj.spec.promotion or nil
  if promotion ~= nil and promotion.onDelete == "Keep" then
    hs.message = "Being deleted: the config is left as it is (onDelete: Keep)"
  else
    hs.message = "Being deleted: restoring the config as it was before the experiment"
  end
  return hs
end

if obj.status == nil then
  return hs
end
local st = obj.status

local function condition(kind)
  if st.conditions == nil then
    return nil
  end
  for _, c in ipairs(st.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local generation = (obj.metadata ~= nil and obj.metadata.generation) or 0
local observed = st.observedGeneration or 0
local phase = st.phase or "Pending"
local summary = st.message or ""
local degraded = condition("Degraded")

if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
elseif phase == "Aborted" then
  hs.status = "Degraded"
  hs.message = "Aborted by spec.abort" .. (summary ~= "" and (": " .. summary) or "")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = summary ~= "" and summary or "Suspended by spec.suspend"
elseif phase == "Degraded" or (degraded ~= nil and degraded.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(degraded ~= nil and degraded.status == "True" and degraded or nil, summary)
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = describe(condition("AwaitingApproval"), summary)
elseif phase == "Running" or phase == "Concluded" then
  hs.status = "Healthy"
  hs.message = summary
else
  hs.status = "Progressing"
  hs.message = summary ~= "" and summary or ("Phase " .. phase)
end
return hs
