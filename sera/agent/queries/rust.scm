; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name;
;           @scope = an enclosing container, @scope.name = its name (gives Type::method as Type.method).
; Trait method declarations without a body are function_signature_item and are not captured.

(function_item
  name: (identifier) @name
  body: (block)) @function

(impl_item
  type: [(type_identifier) @scope.name
         (generic_type type: (type_identifier) @scope.name)
         (scoped_type_identifier name: (type_identifier) @scope.name)
         (generic_type type: (scoped_type_identifier name: (type_identifier) @scope.name))]) @scope

(trait_item
  name: (type_identifier) @scope.name) @scope

; Inline modules only; `mod foo;` points at another file.
(mod_item
  name: (identifier) @scope.name
  body: (declaration_list)) @scope
