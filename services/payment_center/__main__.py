from services.common.service import serve
from services.payment_center.app import create_app
from services.payment_center.settings import PaymentCenterSettings

settings = PaymentCenterSettings()
serve(create_app(settings), settings.http_host, settings.http_port)
