use phivault_store::TenantId;
use uuid::Uuid;

/// What a ciphertext belongs to. Its canonical encoding is part of the associated data
/// of every seal, so a ciphertext only opens for the same tenant, kind, object and field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// The kind of object (`patient`, `recording`, `data_key`, ...).
    pub kind: &'a str,
    /// The object's id.
    pub object: Uuid,
    /// The field within the object (`mrn`, `given_name`, ...), or `""` for a whole object.
    pub field: &'a str,
}

impl Binding<'_> {
    /// Canonical bytes: a domain label, then each part length-prefixed, so no two
    /// different bindings encode alike.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.kind.len() + self.field.len());
        out.extend_from_slice(b"phivault-binding-v1");
        out.extend_from_slice(self.tenant.as_uuid().as_bytes());
        out.extend_from_slice(&(self.kind.len() as u32).to_be_bytes());
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(self.object.as_bytes());
        out.extend_from_slice(&(self.field.len() as u32).to_be_bytes());
        out.extend_from_slice(self.field.as_bytes());
        out
    }
}
