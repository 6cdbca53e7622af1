-- Approve the promotion the active test awaits, for that test only: spec.promotion.approvedTestId pins the
-- approval to status.test.id, so it cannot carry over to a later test.
local st = obj.status
if st == nil or st.phase ~= "AwaitingApproval" or st.test == nil or st.test.id == nil or st.test.id == "" then
  error("approve: the experiment is not awaiting approval of a test", 0)
end
if obj.spec == nil then
  obj.spec = {}
end
if obj.spec.promotion == nil then
  obj.spec.promotion = {}
end
obj.spec.promotion.approved = true
obj.spec.promotion.approvedTestId = st.test.id
return obj
