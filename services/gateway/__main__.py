from services.common.service import serve
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

settings = GatewaySettings()
serve(create_app(settings), settings.http_host, settings.http_port)
