//! What the current identity may do, asked of the API server with SelfSubjectAccessReview (the
//! request `kubectl auth can-i` sends), so a command can refuse before it changes anything.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::ClusterError;
use crate::rbac::Access;

/// Reviews asked at once.
const CONCURRENCY: usize = 8;

/// The accesses of `wanted` the API server says this identity lacks in `namespace`, in order.
pub async fn missing(
    client: &kube::Client,
    namespace: &str,
    wanted: &[Access],
) -> Result<Vec<Access>, ClusterError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answers: Vec<(Access, bool)> = futures::stream::iter(wanted.iter().cloned())
        .map(|access| {
            let reviews = reviews.clone();
            async move {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(namespace.to_owned()),
                            verb: Some(access.verb.clone()),
                            group: Some(access.group.clone()),
                            resource: Some(access.resource.clone()),
                            subresource: Some(access.subresource.clone())
                                .filter(|sub| !sub.is_empty()),
                            name: Some(access.name.clone()).filter(|name| !name.is_empty()),
                            ..ResourceAttributes::default()
                        }),
                        ..SelfSubjectAccessReviewSpec::default()
                    },
                    ..SelfSubjectAccessReview::default()
                };
                let answer = reviews
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(ClusterError::api(format!(
                        "asking whether this identity may {access}"
                    )))?;
                let allowed = answer.status.is_some_and(|status| status.allowed);
                Ok::<_, ClusterError>((access, allowed))
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(answers
        .into_iter()
        .filter(|(_, allowed)| !allowed)
        .map(|(access, _)| access)
        .collect())
}
