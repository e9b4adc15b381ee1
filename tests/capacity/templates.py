"""Reading synthesized templates in the capacity tests (the stack-level ones in tests/)."""

from __future__ import annotations

# The purchase's logical id is one of the tags tying a bought block to it: a change would make the
# next deployment buy a second block. Never update this value to make a test pass.
PURCHASE_LOGICAL_ID = "CapacityPurchaseE947F665"


def resources_of(synthesized, resource_type: str) -> dict[str, dict]:
    return {
        name: resource
        for name, resource in synthesized.template_json["Resources"].items()
        if resource["Type"] == resource_type
    }


def only(synthesized, resource_type: str) -> tuple[str, dict]:
    """The one resource of ``resource_type``: its logical id and body."""
    ((name, resource),) = resources_of(synthesized, resource_type).items()
    return name, resource


def function_named(synthesized, description_start: str) -> dict:
    """The properties of the one Lambda function whose description starts so."""
    (found,) = [
        resource["Properties"]
        for resource in resources_of(synthesized, "AWS::Lambda::Function").values()
        if resource["Properties"].get("Description", "").startswith(description_start)
    ]
    return found


def role_statements(synthesized, role: str) -> list[dict]:
    """Every statement of every inline policy attached to the role ``role`` (a logical id)."""
    return [
        statement
        for policy in resources_of(synthesized, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def function_role(function_properties: dict) -> str:
    return function_properties["Role"]["Fn::GetAtt"][0]


def named(synthesized, resource_type: str, prefix: str) -> str:
    """The logical id of the one ``resource_type`` whose construct path starts with ``prefix``."""
    (name,) = [name for name in resources_of(synthesized, resource_type) if name.startswith(prefix)]
    return name
