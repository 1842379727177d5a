from services.common.service import serve
from services.gateway.connector.app import create_app
from services.gateway.connector.settings import ConnectorSettings

settings = ConnectorSettings()
serve(create_app(settings), settings.http_host, settings.http_port)
