//! The answering side of the image calls: a member takes an image the
//! leader stages (`StageImage`), serves one a peer fetches (`FetchImage`),
//! drops one the leader never proposed (`DiscardImage`). Every call is
//! admitted by [`PeerAuth`] first, like the Raft transport's.

use super::{read_chunks, Images, Key, STALL};
use crate::network::pb;
use crate::network::pb::image_transport_server::{ImageTransport, ImageTransportServer};
use crate::PeerAuth;
use tokio::sync::mpsc;
use tonic::Status;

/// The server side of the image calls: peers only.
pub struct ImageService {
    images: Images,
    auth: PeerAuth,
}

impl ImageService {
    /// The tonic service to mount beside the Raft transport.
    pub fn server(images: Images, auth: PeerAuth) -> ImageTransportServer<ImageService> {
        ImageTransportServer::new(ImageService { images, auth })
            .max_decoding_message_size(crate::network::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::network::MAX_MESSAGE_BYTES)
    }

    fn answer<T>(&self, message: T) -> tonic::Response<T> {
        let mut resp = tonic::Response::new(message);
        self.auth.stamp_reply(resp.metadata_mut());
        resp
    }
}

type ImageChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ImageChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ImageTransport for ImageService {
    async fn stage_image(
        &self,
        request: tonic::Request<tonic::Streaming<pb::ImageChunk>>,
    ) -> Result<tonic::Response<pb::StageImageResponse>, Status> {
        use futures::StreamExt;
        self.auth.admit(&request, "stage image")?;
        let mut stream = request.into_inner();
        let first = tokio::time::timeout(STALL, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no image header"))??
            .ok_or_else(|| Status::invalid_argument("an empty image stream"))?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the image stream starts without a header"))?;
        let key = Key::from_pb(
            header
                .image
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("the image header names no image"))?,
        )?;
        if self.images.key_path(&key).is_file() {
            return Ok(self.answer(pb::StageImageResponse { already_held: true }));
        }
        self.images
            .check_space(header.size, "installing the image")
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        tracing::info!(image = %key.stem(), bytes = header.size, "receiving an image from the leader");
        let data =
            futures::stream::iter((!first.data.is_empty()).then_some(Ok::<_, String>(first.data)))
                .chain(stream.map(|m| m.map(|c| c.data).map_err(|s| s.message().to_owned())));
        self.images
            .receive(key, header.size, Box::pin(data))
            .await
            .map_err(|e| {
                tracing::warn!(image = %key.stem(), error = %e, "staging an image failed; its partial file was removed");
                Status::aborted(format!("staging the image failed: {e}"))
            })?;
        tracing::info!(image = %key.stem(), "image staged");
        Ok(self.answer(pb::StageImageResponse {
            already_held: false,
        }))
    }

    type FetchImageStream = ImageChunks;

    async fn fetch_image(
        &self,
        request: tonic::Request<pb::ImageRef>,
    ) -> Result<tonic::Response<Self::FetchImageStream>, Status> {
        self.auth.admit(&request, "fetch image")?;
        let key = Key::from_pb(request.get_ref())?;
        let path = self.images.key_path(&key);
        let size = std::fs::metadata(&path)
            .map_err(|_| {
                Status::not_found(format!(
                    "node {} does not hold image {}",
                    self.auth.identity().node(),
                    key.stem()
                ))
            })?
            .len();
        tracing::info!(image = %key.stem(), bytes = size, "sending an image to a peer");
        let first = pb::ImageChunk {
            header: Some(pb::ImageHeader {
                image: Some(key.to_pb()),
                size,
            }),
            data: Vec::new(),
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(first)).is_err() {
                return;
            }
            let sent = read_chunks(&path, |data| {
                let chunk = pb::ImageChunk { header: None, data };
                tx.blocking_send(Ok(chunk)).is_ok()
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(Status::internal(format!("reading the image: {e}"))));
            }
        });
        Ok(self.answer(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn discard_image(
        &self,
        request: tonic::Request<pb::ImageRef>,
    ) -> Result<tonic::Response<pb::DiscardImageResponse>, Status> {
        self.auth.admit(&request, "discard image")?;
        let key = Key::from_pb(request.get_ref())?;
        self.images.remove_key(&key);
        Ok(self.answer(pb::DiscardImageResponse {}))
    }
}
