-- Resume a suspended experiment where it stopped (spec.suspend back to false).
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = false
return obj
