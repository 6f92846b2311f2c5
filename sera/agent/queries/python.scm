; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name;
;           @scope = an enclosing container, @scope.name = its name (gives Class.method).
; `async def` is the same node as `def`; decorators sit outside the node, so lines start at `def`.

(function_definition
  name: (identifier) @name) @function

(class_definition
  name: (identifier) @scope.name) @scope
