; Function definitions for sera's starting-function sampler (sera/specialize/functions.py).
; Captures: @function = the definition node, @name = its simple name;
;           @scope = an enclosing container, @scope.name = its name (gives Class.method).
; Anonymous functions count only when assigned to a name, since a request must name its function.

(function_declaration
  name: (identifier) @name) @function

(generator_function_declaration
  name: (identifier) @name) @function

(method_definition
  name: [(property_identifier) (private_property_identifier)] @name) @function

; const f = () => {}, let g = function () {}
(variable_declarator
  name: (identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

; f = function () {}, exports.f = () => {}, Foo.prototype.f = function () {}
(assignment_expression
  left: [(identifier) @name
         (member_expression property: (property_identifier) @name)]
  right: [(arrow_function) (function_expression) (generator_function)]) @function

; class fields holding functions: handle = () => {}
(field_definition
  property: [(property_identifier) (private_property_identifier)] @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

; object literals of functions: { f: () => {} }
(pair
  key: (property_identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @function

(class_declaration
  name: (identifier) @scope.name) @scope

(class
  name: (identifier) @scope.name) @scope

; const api = { ... } and const Foo = class { ... } name their members
(variable_declarator
  name: (identifier) @scope.name
  value: [(object) (class)]) @scope
