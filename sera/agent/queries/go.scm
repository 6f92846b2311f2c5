; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name,
;           @receiver = a method's receiver type (gives Type.Method).
; A body is required: `func f()` without one is implemented in assembly.

(function_declaration
  name: (identifier) @name
  body: (block)) @function

(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [(type_identifier) @receiver
             (pointer_type (type_identifier) @receiver)
             (generic_type type: (type_identifier) @receiver)
             (pointer_type (generic_type type: (type_identifier) @receiver))]))
  name: (field_identifier) @name
  body: (block)) @function
