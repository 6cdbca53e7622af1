-- Argo CD resource actions for canopy.genaiops.io/PromptExperiment (Lua 5.1, as Argo CD runs it).
-- Every action is listed; the ones that would do nothing useful now are disabled.
local actions = {}
local spec = obj.spec or {}
local st = obj.status or {}
local phase = st.phase or "Pending"
local ended = phase == "Concluded" or phase == "Aborted"
local testId = st.test ~= nil and st.test.id or nil
local suspended = spec.suspend == true

-- approve: only a promotion that waits for approval, and only for the active test.
actions["approve"] = {
  ["disabled"] = not (phase == "AwaitingApproval" and testId ~= nil and testId ~= ""),
  ["iconClass"] = "fa fa-fw fa-check",
  ["displayName"] = "Approve promotion"
}
actions["suspend"] = {
  ["disabled"] = suspended or ended,
  ["iconClass"] = "fa fa-fw fa-pause",
  ["displayName"] = "Suspend"
}
actions["resume"] = {
  ["disabled"] = not suspended,
  ["iconClass"] = "fa fa-fw fa-play",
  ["displayName"] = "Resume"
}
actions["abort"] = {
  ["disabled"] = spec.abort == true or ended,
  ["iconClass"] = "fa fa-fw fa-stop",
  ["displayName"] = "Abort test"
}
return actions
