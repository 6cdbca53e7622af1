-- Pause the experiment (spec.suspend): no polling, no config writes, no promotion; counts are kept.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = true
return obj
