//! Who a client certificate names, as kube-apiserver and the kubelet read it: the subject's
//! common name is the user, its organizations the groups (plus `system:authenticated`).

/// The user name and groups of a verified client certificate (DER).
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some((name, groups))
}
