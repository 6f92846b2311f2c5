; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name;
;           @scope = an enclosing container, @scope.name = its name (gives Class.method).
; Abstract and interface methods have no body and are not captured.

(method_declaration
  name: (identifier) @name
  body: (block)) @function

(constructor_declaration
  name: (identifier) @name) @function

(compact_constructor_declaration
  name: (identifier) @name) @function

(class_declaration
  name: (identifier) @scope.name) @scope

(interface_declaration
  name: (identifier) @scope.name) @scope

(enum_declaration
  name: (identifier) @scope.name) @scope

(record_declaration
  name: (identifier) @scope.name) @scope

(annotation_type_declaration
  name: (identifier) @scope.name) @scope
