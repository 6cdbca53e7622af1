-- End the active test keeping the champion (spec.abort): the challenger leaves the config and no test runs
-- until spec.abort is set back to false.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.abort = true
return obj
