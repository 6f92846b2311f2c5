; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name;
;           @scope = an enclosing container, @scope.name = its name (gives Class.method).
; Only definitions with a body: overload signatures, abstract methods and interface members are
; separate node types (function_signature, method_signature, ...) and are not captured.
; Also used for the TSX grammar, which has the same node types (plus JSX).

(function_declaration
  name: (identifier) @name) @function

(generator_function_declaration
  name: (identifier) @name) @function

(method_definition
  name: [(property_identifier) (private_property_identifier)] @name) @function

(variable_declarator
  name: (identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

(assignment_expression
  left: [(identifier) @name
         (member_expression property: (property_identifier) @name)]
  right: [(arrow_function) (function_expression) (generator_function)]) @function

(public_field_definition
  name: [(property_identifier) (private_property_identifier)] @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

(pair
  key: (property_identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

(class_declaration
  name: (type_identifier) @scope.name) @scope

(abstract_class_declaration
  name: (type_identifier) @scope.name) @scope

(class
  name: (type_identifier) @scope.name) @scope

(internal_module
  name: [(identifier) (nested_identifier)] @scope.name) @scope

(module
  name: (identifier) @scope.name) @scope

(variable_declarator
  name: (identifier) @scope.name
  value: [(object) (class)]) @scope
