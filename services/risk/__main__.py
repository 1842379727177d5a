from services.common.service import serve
from services.risk.app import create_app
from services.risk.settings import RiskSettings

settings = RiskSettings()
serve(create_app(settings), settings.http_host, settings.http_port)
