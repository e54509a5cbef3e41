"""The contract's operation ids and the handler each one runs.

Operation ids are the names generated mobile clients give their methods, so they
are API verbs (``createSupportRequest``), not Python paths. This map is the only
place that ties one to the other; the app's resolver reads it, and a test checks
that it and the spec name the same operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support_requests.handlers import (
    admin,
    attachments,
    customers,
    devices,
    health,
    mobile,
    stats,
    webhooks,
)

OPERATIONS: dict[str, Callable[..., Any]] = {
    # mobile
    "createSupportRequest": mobile.create_request,
    "listSupportRequests": mobile.list_requests,
    "getSupportRequest": mobile.get_request,
    "replyToSupportRequest": mobile.reply,
    "rateSupportRequest": mobile.rate,
    "markSupportRequestRead": mobile.mark_read,
    "getUnreadCount": mobile.get_unread,
    # admin
    "listQueue": admin.list_queue,
    "adminGetSupportRequest": admin.get_request,
    "adminUpdateSupportRequest": admin.update_request,
    "adminReplyToSupportRequest": admin.reply,
    "listSupportRequestEvents": admin.list_events,
    "listAdmins": admin.list_admins,
    "getSupportStats": stats.get_stats,
    # attachments
    "uploadAttachment": attachments.upload_attachment,
    "downloadAttachment": attachments.download_attachment,
    "downloadAttachmentThumbnail": attachments.download_attachment_thumbnail,
    "adminUploadAttachment": attachments.admin_upload_attachment,
    "adminDownloadAttachment": attachments.admin_download_attachment,
    "adminDownloadAttachmentThumbnail": attachments.admin_download_attachment_thumbnail,
    "adminRemoveAttachment": attachments.remove_attachment,
    # push devices
    "registerDevice": devices.register_device,
    "listDevices": devices.list_devices,
    "removeDevice": devices.remove_device,
    # webhook endpoints
    "createWebhookEndpoint": webhooks.create_webhook_endpoint,
    "listWebhookEndpoints": webhooks.list_webhook_endpoints,
    "getWebhookEndpoint": webhooks.get_webhook_endpoint,
    "updateWebhookEndpoint": webhooks.update_webhook_endpoint,
    "deleteWebhookEndpoint": webhooks.delete_webhook_endpoint,
    "listWebhookDeliveries": webhooks.list_webhook_deliveries,
    "retryWebhookDelivery": webhooks.retry_webhook_delivery,
    "pingWebhookEndpoint": webhooks.ping_webhook_endpoint,
    # customers' data
    "eraseCustomer": customers.erase_customer,
    # health
    "checkLiveness": health.liveness,
    "checkReadiness": health.readiness,
}
